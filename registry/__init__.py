"""The catalog: tools, resources, templates, prompts, upstream gateways and virtual servers."""
