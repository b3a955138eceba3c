"""The measurements: each module registers one track."""
