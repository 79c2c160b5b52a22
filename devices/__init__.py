"""Device profiles and discovery of what this machine has (never imports TensorFlow)."""
