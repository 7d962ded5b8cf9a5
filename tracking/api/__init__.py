"""The read-only history API under /api/v1/ (Django REST framework, documented by
drf-spectacular): the teams a caller may see, their workers, stored positions and exports."""
