"""`llamaforge check`: what Axolotl would make of a config before a GPU hour is spent (findings), from the
training setup read back from any Axolotl config (reader) and Axolotl's own config schema (axolotl_schema)."""
