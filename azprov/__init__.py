"""azprov: agentless first-boot provisioning for Azure Linux VMs."""

__version__ = "0.1.0"
AGENT_NAME = "azprov"
USER_AGENT = f"{AGENT_NAME}/{__version__}"
