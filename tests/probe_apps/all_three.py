"""The three heroes apps' routes in one app; FastAPI runs each included app's lifespan too."""

from fastapi import FastAPI

from . import async_session, blocking, tutorial

app = FastAPI()
app.include_router(tutorial.app.router, prefix="/tutorial")
app.include_router(blocking.app.router, prefix="/blocking")
app.include_router(async_session.app.router, prefix="/async")
