# nabij: one image, any service: `docker run IMAGE proximity --config /etc/nabij`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nabij nabij
COPY services services
COPY simulators simulators
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 nabij
COPY --from=build /install /usr/local
COPY config /etc/nabij
USER nabij
ENV NABIJ_CONFIG=/etc/nabij
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9100/healthz').status != 200)"
ENTRYPOINT ["nabij"]
CMD ["run", "--metrics-port", "9100"]
