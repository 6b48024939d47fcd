"""Telegram through aiogram 3: sending and editing plan messages, buttons, commands,
and alerts. Every text goes as plain text (no parse mode).

Updates come by long polling (``getUpdates``), so one bot token serves one
polling approver at a time (Telegram refuses a second concurrent poller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, User

from medbay.approver import messages
from medbay.approver.alerts import TryLater, Undeliverable
from medbay.approver.book import ChatMessage
from medbay.approver.decisions import Decisions, Person

log = logging.getLogger("medbay.approver.telegram")

TRANSIENT = (TelegramNetworkError, TelegramRetryAfter, TelegramServerError)
"""Errors worth trying again later; any other means the message cannot be sent or edited."""
ANSWER_CHARS = 200
"""Telegram's limit on a callback answer."""
RETRY_SECONDS = 5.0

HELP = (
    "Medbay approver. Plans that need a person are posted here with Approve and Reject "
    "buttons, and alerts from the executor.\n/pending: plans waiting for approval, with the "
    "time left\n"
    "/status: open issues, running plans, last actions, open breakers"
)


def make_bot(token: str, api_base: str) -> Bot:
    return Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(api_base)))


def person(user: User) -> Person:
    return Person(user.id, f"@{user.username}" if user.username else user.full_name)


class TelegramChat:
    """The configured chats, as the service's ``Chat`` and as the alerts' ``Messenger``."""

    def __init__(self, bot: Bot, chat_ids: Sequence[int]) -> None:
        self.bot = bot
        self.chat_ids = list(chat_ids)

    async def announce(self, text: str, buttons: Sequence[tuple[str, str]]) -> list[ChatMessage]:
        markup = (
            InlineKeyboardMarkup(
                inline_keyboard=[
                    [
                        InlineKeyboardButton(text=label, callback_data=data)
                        for label, data in buttons
                    ]
                ]
            )
            if buttons
            else None
        )
        sent: list[ChatMessage] = []
        for chat_id in self.chat_ids:
            try:
                message = await self.bot.send_message(chat_id, text, reply_markup=markup)
            except TelegramAPIError as exc:
                log.warning("sending to chat %s failed: %s", chat_id, exc)
                continue
            sent.append(ChatMessage(chat_id=chat_id, message_id=message.message_id))
        return sent

    async def send(self, chat_id: int, text: str) -> ChatMessage:
        try:
            message = await self.bot.send_message(chat_id, text)
        except TRANSIENT as exc:
            raise TryLater(str(exc)) from exc
        except TelegramAPIError as exc:
            raise Undeliverable(str(exc)) from exc
        return ChatMessage(chat_id=chat_id, message_id=message.message_id)

    async def show(self, sent: Sequence[ChatMessage], text: str) -> bool:
        done = True
        for message in sent:
            try:
                await self.bot.edit_message_text(
                    text=text, chat_id=message.chat_id, message_id=message.message_id
                )
            except TRANSIENT as exc:
                log.warning("editing message %s failed: %s; will retry", message, exc)
                done = False
            except TelegramBadRequest as exc:
                if "not modified" not in str(exc):  # already showing this text
                    log.warning("message %s cannot be edited: %s", message, exc)
            except TelegramAPIError as exc:  # deleted, bot removed from the chat...
                log.warning("message %s cannot be edited: %s", message, exc)
        return done


def build_router(service: Decisions) -> Router:
    """The bot's handlers (a router belongs to one dispatcher: build one per dispatcher)."""
    router = Router(name="approver")

    @router.callback_query()
    async def on_button(callback: CallbackQuery) -> None:
        try:
            answer = await service.on_click(person(callback.from_user), callback.data or "")
        except Exception:
            log.exception("handling a button click failed")
            answer = messages.FAILED
        await callback.answer(answer[:ANSWER_CHARS])

    def allowed(message: Message) -> bool:
        user = message.from_user
        if user is not None and service.may_use_commands(user.id):
            return True
        who = "someone unknown" if user is None else person(user).label
        log.info("ignored a command from %s: not an allowed user", who)
        return False

    @router.message(Command("pending"))
    async def on_pending(message: Message) -> None:
        if allowed(message):
            await message.answer(service.pending_text())

    @router.message(Command("status"))
    async def on_status(message: Message) -> None:
        if allowed(message):
            try:
                text = await service.status_text()
            except Exception:
                log.exception("building /status failed")
                text = messages.FAILED
            await message.answer(text)

    @router.message(Command("start", "help"))
    async def on_help(message: Message) -> None:
        if allowed(message):
            await message.answer(HELP)

    return router


async def poll(bot: Bot, service: Decisions) -> None:
    """Receive updates until cancelled; then stop polling cleanly (no request left behind)."""
    dispatcher = Dispatcher()
    dispatcher.include_router(build_router(service))
    polling = asyncio.create_task(_keep_polling(bot, dispatcher))
    try:
        await asyncio.shield(polling)
    finally:
        if not polling.done():
            with contextlib.suppress(RuntimeError):  # raised when between two attempts
                await dispatcher.stop_polling()
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)


async def _keep_polling(bot: Bot, dispatcher: Dispatcher) -> None:
    """Poll, starting over when the Bot API is unreachable or refuses."""
    while True:
        try:
            await bot.delete_webhook()  # polling is refused while a webhook is set
            await dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
            return
        except TelegramAPIError as exc:
            log.error("Telegram polling failed: %s; retrying in %g s", exc, RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
