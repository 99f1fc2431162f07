"""The behavior control server: one carrier model, erasers named per request, admin routes.

Imports `eraser_store`, never `training`.
"""
