"""Serving a trained model over HTTP (LitServe): the request rules, the model's worker, the server
and its web page. Imports inference, never the other way."""
