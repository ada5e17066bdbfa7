"""The benchmarks and measurement studies, kept out of every shipped package (bench/README.md).

Importable from a checkout only (``pip install -e .``): the images never copy this folder.
"""
