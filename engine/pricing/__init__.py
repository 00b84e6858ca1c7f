"""Option pricing: vectorized Black-Scholes-Merton, Black-76, American, Merton jump, Heston, neural, ensemble.

Conventions (docs/architecture.md §7), shared by every module here:

- ``T`` in years (ACT/365), ``r`` continuously compounded risk-free rate, ``q`` continuous dividend yield;
- ``right`` is ``'c'``/``'p'`` (also ``'call'``/``'put'``, any case), an array of those, or a boolean
  call mask (``True`` = call);
- inputs broadcast with numpy rules; a scalar input gives a 0-d array;
- vega per 1 vol point, theta per calendar day, rho per 1 rate point;
- invalid inputs give NaN with a :class:`engine.pricing.inputs.Reason` code, shape mismatches a ``ValueError``.

Importing this package is light: torch is only imported inside :mod:`engine.pricing.neural` functions.
"""
