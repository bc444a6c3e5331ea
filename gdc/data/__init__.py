"""Data sources, canaries and the epoch pipeline: in-memory numpy arrays with stable int32 ids."""
