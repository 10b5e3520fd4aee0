"""Data access for users."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from oms.db.models import User, UserRole


class EmailAlreadyRegisteredError(Exception):
    pass


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, email: str, hashed_password: str, role: UserRole = UserRole.USER) -> User:
        user = User(email=email.lower(), hashed_password=hashed_password, role=role)
        self._session.add(user)
        try:
            async with self._session.begin_nested():
                await self._session.flush()
        except IntegrityError as error:
            raise EmailAlreadyRegisteredError(email) from error
        return user

    async def get_by_email(self, email: str) -> User | None:
        result = await self._session.execute(select(User).where(User.email == email.lower()))
        return result.scalar_one_or_none()

    async def get(self, user_id: int) -> User | None:
        return await self._session.get(User, user_id)

    async def exists(self, user_id: int) -> bool:
        result = await self._session.execute(select(User.id).where(User.id == user_id))
        return result.scalar_one_or_none() is not None
