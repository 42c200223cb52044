// Typed setters over libcurl's variadic curl_easy_setopt/curl_easy_getinfo, which Swift cannot
// call directly.
#ifndef KEEL_CURL_H
#define KEEL_CURL_H

#include <curl/curl.h>
#include <stddef.h>

typedef size_t (*keel_curl_data_callback)(char *data, size_t size, size_t count, void *user);
typedef int (*keel_curl_progress_callback)(void *user, curl_off_t dltotal, curl_off_t dlnow,
                                           curl_off_t ultotal, curl_off_t ulnow);

CURLcode keel_curl_setopt_long(CURL *curl, CURLoption option, long value);
CURLcode keel_curl_setopt_string(CURL *curl, CURLoption option, const char *value);
CURLcode keel_curl_setopt_pointer(CURL *curl, CURLoption option, void *value);
/// CURLOPT_WRITEFUNCTION / CURLOPT_HEADERFUNCTION with their user pointer.
CURLcode keel_curl_set_write_callback(CURL *curl, keel_curl_data_callback callback, void *user);
CURLcode keel_curl_set_header_callback(CURL *curl, keel_curl_data_callback callback, void *user);
/// CURLOPT_XFERINFOFUNCTION (progress on, so the callback runs about once a second while idle).
CURLcode keel_curl_set_progress_callback(CURL *curl, keel_curl_progress_callback callback, void *user);
/// Called with each socket libcurl opens (to shut it down when a transfer is cancelled).
typedef int (*keel_curl_sockopt_callback)(void *user, curl_socket_t fd, curlsocktype purpose);
CURLcode keel_curl_set_sockopt_callback(CURL *curl, keel_curl_sockopt_callback callback, void *user);
CURLcode keel_curl_getinfo_long(CURL *curl, CURLINFO info, long *value);

#endif
