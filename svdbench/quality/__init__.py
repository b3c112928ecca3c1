"""Quality over a set, not one pair: samples over real images x seeds beside the measurement (samples.py, from
the images of images.py), their pairing with a baseline's (paired.py, with VMAF in vmaf.py), the bootstrap
interval of each paired metric (bootstrap.py), and the verdict that uses it (verdict.py). docs/comparison.md
says how to read them.
"""
