/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP client half (libcurl). Kept in its own object file so that
 * programs which only serve an API (qtvmm) do not load libcurl and its
 * dependencies at start-up: the static archive only pulls this file into
 * programs that call httpc_*(), and --as-needed then drops libcurl. */
#include "common/http.h"
#include "common/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct httpc_buf {
    char *data;
    size_t len;
};

static size_t httpc_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct httpc_buf *b = ud;
    size_t n = size * nmemb;
    char *nd = realloc(b->data, b->len + n + 1);

    if (!nd)
        return 0;
    b->data = nd;
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = 0;
    return n;
}

static int httpc_do(const char *sock_path, const char *url, const char *method, const char *body,
                    long *status, char **resp_body)
{
    struct httpc_buf b = {.data = NULL, .len = 0};
    struct curl_slist *hdrs = NULL;
    CURLcode rc;
    CURL *c = curl_easy_init();

    if (!c)
        return -ENOMEM;
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (sock_path)
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock_path);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, httpc_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        free(b.data);
        log_debug("http %s %s: %s", method, url, curl_easy_strerror(rc));
        return rc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EIO;
    }
    *resp_body = b.data ? b.data : strdup("");
    return *resp_body ? 0 : -ENOMEM;
}

int httpc_unix(const char *sock_path, const char *method, const char *path, const char *body,
               long *status, char **resp_body)
{
    char url[1024];

    snprintf(url, sizeof(url), "http://localhost%s", path);
    return httpc_do(sock_path, url, method, body, status, resp_body);
}

int httpc_url(const char *url, const char *method, const char *body, long *status, char **resp_body)
{
    return httpc_do(NULL, url, method, body, status, resp_body);
}
