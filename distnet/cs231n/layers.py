"""cs231n/layers.py: every layer of distnet.layers (naive conv and pool, batch, layer and
group norm, dropout with p = probability of dropping a unit)."""

from distnet.layers import *
