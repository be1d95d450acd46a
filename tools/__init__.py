"""Developer tools of U-Net Explorer (browser driving for tests, benchmarks and load tests)."""
