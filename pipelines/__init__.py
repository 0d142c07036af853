"""The glue: params composition, the notebook runner, the claims report."""
