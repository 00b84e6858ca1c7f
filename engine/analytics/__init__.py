"""Small pure analytics the GUI renders: strategy templates, order-ticket figures, payoff curves.

Everything here is a function of engine data (chains, legs, pricing results); no Qt, no I/O.
"""
