"""Model configs shipped with attrib (registered with open_clip on first use)."""
