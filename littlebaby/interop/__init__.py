"""Other software's model files, read into littlebaby runs and written back, outside the core.

``original``: the runs of the original The Little Baby notebook (v0.0.5 to v0.0.9), the project this one grew
from. ``hf`` (and ``hf_tokenizer`` for tokenizer.json): Hugging Face GPT-2 folders. ``gguf_export``: llama.cpp's
GGUF, with the optional gguf package. Each maps files onto ``littlebaby.model.Config`` and its parameter dict,
and the run-writing code of littlebaby does the rest. Nothing here imports transformers or torch: Hugging Face
files are written and read with safetensors and json alone.
"""
