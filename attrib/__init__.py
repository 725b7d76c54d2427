"""attrib: open-set origin attribution of synthetic images from frozen CLIP features.

Two stages share one contract, the feature cache (:mod:`attrib.store`): ``extract`` runs a frozen
backbone once and caches the CLS token of every transformer block; ``probe`` fits linear heads and
open-set scorers on the cached arrays as often as a study needs.
"""

__version__ = "0.1.0"
