"""`llamaforge check`: what Axolotl would make of a config before a GPU hour is spent (findings), against
Axolotl's own config schema (axolotl_schema)."""
