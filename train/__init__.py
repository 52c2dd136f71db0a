"""Training the default model: the synthetic spoken-dialogue corpus, the codec, the LM."""
