from components.loopback_hub import *  # noqa: F401,F403 - the server moved into the product (scenario demo)
