"""Trading models with the rest of the ecosystem, outside the core: Hugging Face GPT-2 folders (hf.py, and
hf_tokenizer.py for tokenizer.json). Nothing here imports transformers or torch: files are written and read
with safetensors and json alone."""
