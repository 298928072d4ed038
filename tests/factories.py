"""Model factories: each test states what it needs and gets valid defaults for the rest."""

import factory
from django.contrib.auth import get_user_model

from registry.choices import IntegrationType, Transport
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    is_staff = False
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class GatewayFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Gateway

    name = factory.Sequence(lambda n: f"upstream-{n}")
    transport = Transport.STREAMABLE_HTTP
    url = factory.LazyAttribute(lambda g: f"http://127.0.0.1:9/{g.name}/mcp")


class ToolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tool

    name = factory.Sequence(lambda n: f"tool_{n}")
    description = "A tool for tests."
    input_schema = factory.LazyFunction(lambda: {"type": "object", "properties": {"x": {"type": "string"}}})
    integration_type = IntegrationType.MCP
    gateway = factory.SubFactory(GatewayFactory)


class ResourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Resource

    uri = factory.Sequence(lambda n: f"file:///docs/{n}.txt")
    name = factory.Sequence(lambda n: f"doc {n}")
    mime_type = "text/plain"
    text = "hello"


class ResourceTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ResourceTemplate

    uri_template = factory.Sequence(lambda n: f"file:///logs/{n}/{{date}}.txt")
    name = factory.Sequence(lambda n: f"logs {n}")
    gateway = factory.SubFactory(GatewayFactory)


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    name = factory.Sequence(lambda n: f"prompt_{n}")
    arguments = factory.LazyFunction(lambda: [{"name": "topic", "required": True}])
    template = "Write about {{ topic }}."


class VirtualServerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VirtualServer

    name = factory.Sequence(lambda n: f"server-{n}")
