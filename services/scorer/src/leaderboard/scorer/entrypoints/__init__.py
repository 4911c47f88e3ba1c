"""How the scorer is driven: the Faust worker (``worker``) and its web routes (``web``)."""
