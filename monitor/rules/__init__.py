"""Rules: condition trees that flag mentions, each flag with a readable explanation."""
