from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Events and webhooks"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        from .models import WebhookSubscription
        from .services import subscriptions_changed

        # Every write keeps a copy of who is subscribed (webhooks.services.active_subscribers);
        # any save or delete of a subscription, from the API, the admin or the worker, ends it.
        uid = "webhooks.subscriptions_changed"
        post_save.connect(subscriptions_changed, sender=WebhookSubscription, dispatch_uid=f"{uid}.saved")
        post_delete.connect(subscriptions_changed, sender=WebhookSubscription, dispatch_uid=f"{uid}.deleted")
