"""VOSI documents: capabilities, availability and tables, for every service of the app."""
