"""Fine-tuning parts that live on the client: trainable prompts, training data, the loss, and the
differentiable span math a server recomputes for a backward request. Weights never train here."""
