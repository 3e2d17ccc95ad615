"""Vendored from saev 0.1.0 (OSU-NLP-Group/saev, https://github.com/OSU-NLP-Group/saev, MIT licence, see
LICENSE here), the PyPI wheel ``saev-0.1.0-py3-none-any.whl`` (sha256
4c8abb6a1dcb843497a468ff688002e03986bed246fb7b76147b7c312ab2db10): ``nn.py`` and ``config.py``,
unmodified. The released CLIP and DINOv2 SAEs are in this version's checkpoint format (no schema).

Only the tests use it, to write ``sae.pt`` files with saev's own ``dump`` without installing the
package or touching the network.
"""
