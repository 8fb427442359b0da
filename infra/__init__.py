"""Infrastructure: the embedded broker launcher, Triton repository templates, production manifests."""
