from integration_project.components.order_route import OrderRoute

__all__ = ["OrderRoute"]
