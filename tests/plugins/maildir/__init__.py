"""Tests of the maildir platform plugin."""
