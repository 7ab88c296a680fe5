"""Model files the tools create or fetch locally: the catalog's tiny Llama (tiny) and a real pretrained
model converted offline from a GGUF wheel (pretrained)."""
