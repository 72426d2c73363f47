"""The papers' printed figures (facts, with table and page context) and how attnbench reproduces them."""
