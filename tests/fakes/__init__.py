"""Local fakes of the providers' HTTP APIs, for the adapters' tests and the benchmark."""

from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import FakeProvider, Reply, Request
from tests.fakes.telegram import FakeTelegram
from tests.fakes.twilio import FakeTwilio
from tests.fakes.vk import FakeVK

__all__ = ["FakeProvider", "FakeSendGrid", "FakeTelegram", "FakeTwilio", "FakeVK", "Reply",
           "Request"]
