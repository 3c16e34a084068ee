"""Model manifests, signing, the artifact store, the build pipeline and reference models."""
