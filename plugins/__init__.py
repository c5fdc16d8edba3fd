"""Builtin platform plugins. Each loads through the ``retainer`` entry-point group,
exactly like a third-party plugin."""
