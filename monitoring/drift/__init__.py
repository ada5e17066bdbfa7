"""The drift job: compare a window of the prediction log with the bundle's reference data.

Reading (:mod:`reading`), computing (:mod:`computing`) and writing (:mod:`writing`) are three
separate steps, so the computation is tested on DataFrames without a database
(docs/architecture.md, Monitoring).
"""
