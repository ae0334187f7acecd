"""Text analysis: brand matching, text normalisation (and, later, language, sentiment, complaints)."""
