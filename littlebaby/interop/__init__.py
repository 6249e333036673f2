"""Trading models with the rest of the ecosystem, outside the core: Hugging Face GPT-2 folders (hf.py, and
hf_tokenizer.py for tokenizer.json) and llama.cpp's GGUF (gguf_export.py, with the optional gguf package).
Nothing here imports transformers or torch: Hugging Face files are written and read with safetensors and json
alone."""
