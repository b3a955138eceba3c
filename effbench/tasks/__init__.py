"""Built-in tasks; each module registers its tasks on import."""
