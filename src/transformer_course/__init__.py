"""A hands-on course on the Transformer architecture."""
