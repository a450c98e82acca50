# One image for every Longhaul process: `python -m backend api|worker|seed`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Editable install: the app finds its templates and static files next to the code (frontend/).
COPY pyproject.toml README.md ./
COPY backend ./backend
RUN pip install -e '.[server]' && useradd --system --uid 10001 --no-create-home longhaul
COPY frontend ./frontend

USER longhaul
ENV HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000
CMD ["python", "-m", "backend", "api"]
