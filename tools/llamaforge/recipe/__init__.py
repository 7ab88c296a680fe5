"""Recipes: the request types and naming (request), the Jinja environment and filters (templating), the SFT,
DPO, specialists, serving and MLX renderers, and the matrix that renders, writes and compares them with the
committed files (matrix). Renderers return file objects; only the matrix writes. Also the committed recipes
as a user sees them (registry: `llamaforge ls`, `llamaforge cp`)."""
