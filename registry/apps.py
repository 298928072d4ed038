from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """The catalog app; registers its system checks on start-up."""

    name = "registry"
    verbose_name = "Catalog"

    def ready(self) -> None:
        from registry import checks  # noqa: F401 - registers the checks
