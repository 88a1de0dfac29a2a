"""The model cards that ship with berg: one YAML file per model (read through :func:`berg.cards.packaged_cards`)."""
