"""Forms of the team pages."""

from django import forms

from teams.models import Worker


class WorkerAddForm(forms.Form):
    name = forms.CharField(max_length=Worker._meta.get_field("name").max_length, strip=True)
