# The production image: one image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 mailer
COPY pyproject.toml README.md ./
COPY src ./src
COPY workers ./workers
COPY templates ./templates
COPY migrations ./migrations
RUN pip install --upgrade pip && pip install -e '.[dev]' && mkdir -p /app/var && chown mailer /app/var
USER mailer
EXPOSE 8000
CMD ["uvicorn", "--factory", "mailer.web.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
