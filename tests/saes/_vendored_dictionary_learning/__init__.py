"""Vendored from ``dictionary_learning`` 0.1.0 (https://github.com/saprmarks/dictionary_learning, MIT
licence, see LICENSE here), the PyPI wheel ``dictionary_learning-0.1.0-py3-none-any.whl`` (sha256
211116f9cc6fde643ea447f11da1c1ea9d0174dd9460e2031ae95b2724622ca5), unmodified except that
``dictionary.py`` keeps only the ``Dictionary`` base class (the other classes are not needed).

Only the tests use it, to write SAE folders with the real ``BatchTopKTrainer`` and
``MatryoshkaBatchTopKTrainer`` without installing the package (it pulls nnsight and more) or
touching the network.
"""
