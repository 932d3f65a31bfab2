"""Fleets over SSH: inventories, deploying the suite to devices, remote workers, and the emulated lab.

One code path serves a real fleet and the lab: `suite lab up` writes an inventory like the one a
user writes for a lab of Raspberry Pis, and `suite deploy` / remote workers take either.
"""
