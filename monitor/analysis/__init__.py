"""Text analysis: brand matching, language, sentiment, complaint and churn detection, with evidence."""
