"""Integrations with serving engines (optional extras): ``fastlstm.integrations.ray``
(Ray Serve, extra ``[ray]``)."""
